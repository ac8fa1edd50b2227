//! The policies shipped in `deploy/` load: a user copying them gets a working start.
// Host only: the VM gets the test executables, not the repository they read.
#![cfg(not(feature = "vm"))]
use std::path::{Path, PathBuf};

use belay_agent::policy::Policy;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// The `policy.yaml: |` block of the DaemonSet's ConfigMap, unindented.
fn configmap_policy(manifest: &str) -> String {
    let mut lines = manifest
        .lines()
        .skip_while(|l| l.trim() != "policy.yaml: |");
    lines.next().expect("the ConfigMap has a policy.yaml key");
    lines
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| format!("{}\n", l.get(4..).unwrap_or("")))
        .collect()
}

#[test]
fn the_kubernetes_configmap_policy_loads_and_the_daemonset_uses_it() {
    // Rendered from deploy/helm/belay (`cargo xtask deploy-test` checks it is in step).
    let manifest = std::fs::read_to_string(repo("deploy/kubernetes/belay.yaml")).unwrap();
    let text = configmap_policy(&manifest);
    let policy = Policy::parse(&text, Path::new("configmap/policy.yaml"))
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(policy.subjects[0].name, "coding-agent");
    assert!(!policy.subjects[0].egress.is_empty());
    assert!(manifest.contains("- --policy=/etc/belay/policy.yaml"));
    assert!(manifest.contains("name: belay-agent-policy"));
    // The masking key's directory (the agent refuses to start without its key) is a
    // host path, so hashes stay the same across pod restarts.
    let key_dir = Path::new(belay_agent::mask::DEFAULT_KEY_FILE)
        .parent()
        .unwrap()
        .display()
        .to_string();
    assert!(
        manifest.contains(&format!("mountPath: {key_dir}}}")),
        "{key_dir}"
    );
    assert!(manifest.contains(&format!(
        "hostPath: {{path: {key_dir}, type: DirectoryOrCreate}}"
    )));
}

#[test]
fn the_systemd_unit_checks_and_loads_the_policy() {
    let unit = std::fs::read_to_string(repo("deploy/systemd/belay-agent.service")).unwrap();
    assert!(
        unit.contains("ExecStartPre=/usr/bin/belay-agent --check-policy /etc/belay/policy.yaml")
    );
    assert!(unit.contains("--policy /etc/belay/policy.yaml"));
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    // The package enables the unit; without a policy it must not start.
    assert!(unit.contains("ConditionPathExists=/etc/belay/policy.yaml"));
    // ProtectSystem=strict: the masking key's directory must be a state directory, or
    // the agent cannot create its key and does not start.
    assert!(unit.contains("ProtectSystem=strict"));
    let key_dir = Path::new(belay_agent::mask::DEFAULT_KEY_FILE)
        .parent()
        .unwrap()
        .strip_prefix("/var/lib")
        .unwrap()
        .display()
        .to_string();
    let state = unit
        .lines()
        .find_map(|l| l.strip_prefix("StateDirectory="))
        .expect("a StateDirectory= line");
    assert!(state.split_whitespace().any(|d| d == key_dir), "{state}");
}

#[test]
fn the_example_policy_loads() {
    let path = repo("deploy/policy/example.yaml");
    let policy = Policy::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(!policy.subjects.is_empty());
}
