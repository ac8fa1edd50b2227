//! The canonical JSON of an action: what the audit records show of it, and the core of
//! what a grant key hashes ([`action_digest`], which adds its own fields; see
//! `approvals::grants` for what "the same action" means). Written once so the two cannot
//! drift apart; `serde_json::Map` keeps keys sorted, so the text is canonical whatever
//! order fields are added in. The digest is also stored beside each request, so that
//! the earlier requests for the same action are found by an index. A leaf module.

use belay_proto::domain::Action;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

/// For an exec: type, path, argv and cwd (`None`, unknown, is `null`); for a connect:
/// type, address, port and protocol.
pub(crate) fn action_fields(action: &Action) -> Map<String, Value> {
    let mut fields = Map::new();
    match action {
        Action::Exec(exec) => {
            fields.insert("type".into(), "exec".into());
            fields.insert("path".into(), exec.path().into());
            fields.insert("argv".into(), exec.argv().into());
            fields.insert("cwd".into(), exec.cwd().into());
        }
        Action::Connect(connect) => {
            fields.insert("type".into(), "connect".into());
            fields.insert("address".into(), connect.address.to_string().into());
            fields.insert("port".into(), connect.port.get().into());
            fields.insert("protocol".into(), connect.protocol.as_str().into());
        }
    }
    fields
}

/// Hex SHA-256 of the canonical form of `action`: the fields the audit records show of
/// it, plus, for an exec, the environment and the form's version. Grant keys and the
/// stored requests' `action` column hold it.
pub fn action_digest(action: &Action) -> String {
    let mut canonical = action_fields(action);
    if let Action::Exec(exec) = action {
        // Version 2 of the form: version 1 left out cwd and env. `None` (unknown) and
        // every known directory are different actions.
        canonical.insert("form".into(), 2.into());
        canonical.insert("env".into(), exec.env().into());
    }
    let canonical = Value::Object(canonical);
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv6Addr};
    use std::num::NonZeroU16;

    use belay_proto::domain::{ConnectAction, ExecAction, Protocol};
    use serde_json::json;

    use super::*;

    fn text(action: &Action) -> String {
        Value::Object(action_fields(action)).to_string()
    }

    /// The texts the audit records carried when each writer spelled them out itself:
    /// records already in a log must keep hashing to the same chain.
    #[test]
    fn the_forms_stay_as_audit_records_wrote_them() {
        let exec = ExecAction::new(
            "/usr/bin/git",
            vec!["git".into(), "push".into()],
            Some("/src".into()),
        )
        .unwrap()
        .with_env(vec!["PATH=/usr/bin".into()])
        .unwrap();
        assert_eq!(
            text(&Action::Exec(exec.clone())),
            json!({"type": "exec", "path": exec.path(), "argv": exec.argv(), "cwd": exec.cwd()})
                .to_string()
        );
        let unknown_cwd = ExecAction::new("/bin/sh", vec!["sh".into()], None).unwrap();
        assert_eq!(
            text(&Action::Exec(unknown_cwd)),
            r#"{"argv":["sh"],"cwd":null,"path":"/bin/sh","type":"exec"}"#
        );
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            let connect = ConnectAction {
                address: IpAddr::V6(Ipv6Addr::LOCALHOST),
                port: NonZeroU16::new(443).unwrap(),
                protocol,
            };
            assert_eq!(
                text(&Action::Connect(connect)),
                json!({
                    "type": "connect",
                    "address": "::1",
                    "port": 443,
                    "protocol": match protocol { Protocol::Tcp => "tcp", Protocol::Udp => "udp" },
                })
                .to_string()
            );
        }
    }
}
