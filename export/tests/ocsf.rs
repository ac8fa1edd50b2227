//! OCSF output validated against the published OCSF 1.3.0 JSON schema.
//!
//! The schema is `all.json` of the `ocsf-schema-rs` package (a dev-dependency under
//! `cfg(any())`: downloaded, never compiled), found through `cargo metadata`. It is JSON
//! Schema draft-07 using only `type`, `const`, `enum`, `required`, `properties`, `items`,
//! `$ref` and `additionalProperties`; the validator below implements those, and is
//! stricter than JSON Schema in one way: an attribute the class or object does not define
//! is an error (unless `additionalProperties` is true), so a misspelt field fails too.

mod support;

use std::path::PathBuf;

use belay_export::Event;
use belay_export::format::ocsf;
use serde_json::{Value, json};

fn schema() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_owned());
    let output = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    let manifest = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "ocsf-schema-rs")
        .expect("ocsf-schema-rs in the dependency graph")["manifest_path"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = PathBuf::from(manifest).with_file_name("all.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run `cargo fetch`)", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Every problem of `value` against `schema`, with JSON pointers.
fn validate(root: &Value, schema: &Value, value: &Value, at: &str, problems: &mut Vec<String>) {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference
            .strip_prefix("#/$defs/")
            .expect("local $defs reference");
        let target = &root["$defs"][name];
        assert!(!target.is_null(), "dangling $ref {reference}");
        return validate(root, target, value, at, problems);
    }
    if let Some(constant) = schema.get("const")
        && constant != value
    {
        problems.push(format!("{at}: {value} is not the constant {constant}"));
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        problems.push(format!("{at}: {value} is not one of {options:?}"));
    }
    let ok = match schema.get("type").and_then(Value::as_str) {
        None => true,
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        Some(other) => panic!("type {other} not handled"),
    };
    if !ok {
        problems.push(format!("{at}: {value} is not of type {}", schema["type"]));
        return;
    }
    if let Some(items) = schema.get("items")
        && let Some(array) = value.as_array()
    {
        for (i, item) in array.iter().enumerate() {
            validate(root, items, item, &format!("{at}/{i}"), problems);
        }
    }
    if let Some(object) = value.as_object() {
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !object.contains_key(required.as_str().unwrap()) {
                problems.push(format!("{at}: required attribute {required} missing"));
            }
        }
        let open = schema.get("additionalProperties") == Some(&Value::Bool(true));
        let properties = schema.get("properties").and_then(Value::as_object);
        for (key, child) in object {
            match properties.and_then(|p| p.get(key)) {
                Some(child_schema) => {
                    validate(root, child_schema, child, &format!("{at}/{key}"), problems)
                }
                None if open => {}
                None => problems.push(format!("{at}/{key}: not an attribute of this class/object")),
            }
        }
    }
}

fn check(root: &Value, value: &Value) -> Vec<String> {
    let class = match value["class_uid"].as_u64() {
        Some(1007) => "process_activity",
        Some(4001) => "network_activity",
        Some(6003) => "api_activity",
        other => panic!("unexpected class {other:?}"),
    };
    let mut problems = Vec::new();
    validate(root, &root["$defs"][class], value, "", &mut problems);
    problems
}

fn agent_event(kind: &str, action: Value) -> Event {
    Event {
        id: belay_export::event::random_id(),
        time_ns: 1_780_000_000_000_000_000,
        app: "belay-agent".into(),
        host: "laptop".into(),
        kind: kind.into(),
        body: json!({
            "id": 7, "tgid": 100, "pid": 101, "uid": 1000, "comm": "node",
            "action": action, "owner": "alice", "verdict": "allow",
        }),
    }
}

fn server_event(kind: &str, mut body: Value) -> Event {
    body["kind"] = kind.into();
    Event {
        id: belay_export::event::random_id(),
        time_ns: 1_780_000_000_000_000_000,
        app: "belay-server".into(),
        host: "approvals-1".into(),
        kind: kind.into(),
        body,
    }
}

fn enrollment(result: &str, serial: Option<&str>) -> Value {
    json!({
        "request_id": "", "host": "web-2", "token_id": "0011223344556677",
        "token_host": "web-1", "certificate_serial": serial,
        "certificate_sha256": serial.map(|_| "ff"), "result": result,
    })
}

#[test]
fn every_event_kind_is_valid_ocsf_1_3_0() {
    let root = schema();
    let mut events: Vec<Event> = (0..8).map(support::event).collect();
    for kind in ["expired", "cancelled", "voted", "granted"] {
        let mut e = support::event(5);
        e.kind = kind.into();
        events.push(e);
    }
    events.push(agent_event("opened", json!({"kind": "exec", "path": "/bin/sh", "file": "/usr/bin/dash", "argv": ["sh", "-c", "id"]})));
    events.push(agent_event("opened", json!({"kind": "connect", "address": "10.0.0.1", "port": 22, "protocol": "tcp", "hostnames": ["git.example.com"]})));
    events.push(agent_event(
        "opened",
        json!({"kind": "connect_unix", "path": "/run/docker.sock", "protocol": "unix-stream"}),
    ));
    events.push(agent_event(
        "ended",
        json!({"kind": "exec", "path": "/bin/sh"}),
    ));
    // An agent's policy verdicts: a rule settled the action without a person.
    let mut denied = agent_event("policy", json!({"kind": "exec", "path": "/usr/bin/nc"}));
    denied.body["policy_action"] = "kill".into();
    events.push(denied);
    let mut audited = agent_event(
        "policy",
        json!({"kind": "connect", "address": "10.0.0.2", "port": 443, "protocol": "tcp"}),
    );
    audited.body["policy_action"] = "audit".into();
    events.push(audited);
    events.push(server_event("policy", json!({"version": 4, "sha256": "ab", "size": 120, "pushed_by": "alice@example.com", "reason": "tighten"})));
    events.push(server_event(
        "enrollment",
        enrollment("enrolled", Some("01:02:03")),
    ));
    events.push(server_event(
        "enrollment",
        enrollment("wrong_host_token_spent", None),
    ));
    events.push(server_event(
        "enrollment",
        enrollment("existing_host_token_spent", None),
    ));
    events.push(server_event(
        "policy_vote",
        json!({"sha256": "ab", "admin": "alice@example.com", "reason": "tighten"}),
    ));
    let mut classes = std::collections::BTreeSet::new();
    for event in &events {
        let value = ocsf(event);
        let problems = check(&root, &value);
        assert!(
            problems.is_empty(),
            "{} {}: {problems:#?}\n{value:#}",
            event.app,
            event.kind
        );
        assert_eq!(value["metadata"]["uid"], event.id.as_str());
        assert_eq!(value["metadata"]["version"], "1.3.0");
        assert_eq!(
            value["type_uid"].as_u64().unwrap(),
            value["class_uid"].as_u64().unwrap() * 100 + value["activity_id"].as_u64().unwrap()
        );
        assert_eq!(value["time"].as_i64().unwrap(), event.time_ns / 1_000_000);
        classes.insert(value["class_uid"].as_u64().unwrap());
    }
    assert_eq!(
        classes.into_iter().collect::<Vec<_>>(),
        vec![1007, 4001, 6003]
    );
    let exec = ocsf(&support::event(0));
    assert_eq!(exec["activity_id"], 1, "Launch");
    assert_eq!(
        exec["action_id"], 0,
        "a request is neither allowed nor denied yet"
    );
    assert_eq!(exec["process"]["cmd_line"], "curl https://example.com");
    let connect = ocsf(&support::event(2));
    assert_eq!(connect["dst_endpoint"]["port"], 443);
}

#[test]
fn policy_verdicts_pushes_and_enrollments_map_to_their_own_fields() {
    let mut killed = agent_event("policy", json!({"kind": "exec", "path": "/usr/bin/nc"}));
    killed.body["policy_action"] = "kill".into();
    let v = ocsf(&killed);
    assert_eq!(
        (v["class_uid"].as_u64(), v["action_id"].as_u64()),
        (Some(1007), Some(2))
    );
    assert_eq!(v["severity_id"], 3);
    let mut allowed = agent_event(
        "policy",
        json!({"kind": "connect", "address": "10.0.0.2", "port": 443}),
    );
    allowed.body["policy_action"] = "audit".into();
    let v = ocsf(&allowed);
    assert_eq!(
        (v["class_uid"].as_u64(), v["action_id"].as_u64()),
        (Some(4001), Some(1))
    );

    let push = ocsf(&server_event(
        "policy",
        json!({"version": 4, "pushed_by": "alice@example.com"}),
    ));
    assert_eq!(push["class_uid"], 6003);
    assert_eq!(push["api"]["operation"], "PushPolicy");
    assert_eq!(push["actor"]["user"]["name"], "alice@example.com");
    assert_eq!(push["resources"][0]["uid"], "4");

    let enrolled = ocsf(&server_event(
        "enrollment",
        enrollment("enrolled", Some("01:02:03")),
    ));
    assert_eq!(
        (
            enrolled["activity_id"].as_u64(),
            enrolled["status_id"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(enrolled["api"]["service"]["name"], "belay.v1.EnrollService");
    assert_eq!(enrolled["resources"][0]["uid"], "01:02:03");
    assert_eq!(enrolled["src_endpoint"]["hostname"], "web-2");
    let spent = ocsf(&server_event(
        "enrollment",
        enrollment("wrong_host_token_spent", None),
    ));
    assert_eq!(spent["status_id"], 2, "Failure");
    assert_eq!(spent["severity_id"], 3);
    assert_eq!(
        spent["resources"][0]["uid"], "0011223344556677",
        "the token id, never the token"
    );
}

#[test]
fn the_validator_catches_broken_events() {
    let root = schema();
    let good = ocsf(&support::event(0));
    assert!(check(&root, &good).is_empty());
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("time");
    assert!(check(&root, &missing).iter().any(|p| p.contains("time")));
    let mut bad_enum = good.clone();
    bad_enum["activity_id"] = 42.into();
    assert!(!check(&root, &bad_enum).is_empty());
    let mut misspelt = good.clone();
    misspelt["process"]["cmdline"] = "x".into();
    assert!(!check(&root, &misspelt).is_empty());
    let mut wrong_type = good;
    wrong_type["severity_id"] = "1".into();
    assert!(!check(&root, &wrong_type).is_empty());
}
