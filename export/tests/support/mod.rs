//! Helpers shared by the export tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use belay_export::{Event, ExportConfig};

pub fn event(n: u64) -> Event {
    Event {
        id: belay_export::event::content_id(&[b"test", &n.to_be_bytes()]),
        time_ns: 1_780_000_000_000_000_000 + n as i64 * 1_000_000,
        app: "belay-server".into(),
        host: "host-a".into(),
        kind: if n.is_multiple_of(2) {
            "submitted"
        } else {
            "decided"
        }
        .into(),
        body: serde_json::json!({
            "request_id": format!("req-{n}"),
            "host": "host-a",
            "owner": "alice",
            "agent": "claude",
            "pid": 4242,
            "uid": 1000,
            "verdict": if n.is_multiple_of(2) { serde_json::Value::Null } else { "deny".into() },
            "reviewer": "bob",
            "action": if n % 4 < 2 {
                serde_json::json!({"type": "exec", "path": "/usr/bin/curl", "argv": ["curl", "https://example.com"], "cwd": "/tmp"})
            } else {
                serde_json::json!({"type": "connect", "address": "93.184.216.34", "port": 443, "protocol": "tcp"})
            },
        }),
    }
}

pub fn config(dir: &Path, extra: &str, sinks: &str) -> ExportConfig {
    let text = format!(
        "[spool]\ndir = {:?}\n{extra}\n{sinks}",
        dir.join("spool").display().to_string()
    );
    ExportConfig::parse(Path::new("test.toml"), &text).expect("valid config")
}

/// Polls `check` until it holds or `timeout` passes.
pub async fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

/// Event ids in a JSON Lines file (native format).
pub fn jsonl_ids(path: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    // A last line without its newline is a write in progress (or torn by a kill).
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            v["id"].as_str().expect("id").to_owned()
        })
        .collect()
}

/// A CA and a server certificate for localhost / 127.0.0.1, as PEM files.
pub fn test_pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_ca_cert_der(ca_cert.der(), ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    (paths.0, paths.1, paths.2)
}
