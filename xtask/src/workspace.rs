//! Cargo invocations on the workspace: builds, artifact discovery, host tests.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::util::{self, say};
use crate::{Ctx, libtest};

/// Workspace binaries the VM must have in /opt/belay/bin (the workspace's other binaries,
/// e.g. `belay-server`, go there too; `xtask` does not).
pub const VM_BINARIES: &[&str] = &["belay-agent", "belay"];

/// The package with the end-to-end tests; its targets behind the `vm` feature need BPF LSM.
pub const TESTS_PACKAGE: &str = "belay-tests";
pub const VM_FEATURE: &str = "vm";

/// Only for the BPF target: never built for the host.
const EBPF_PACKAGE: &str = "agent-ebpf";

/// `cargo` on the workspace, with the workspace's own target dir.
pub fn cargo(ctx: &Ctx) -> Command {
    let mut c = util::cmd(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(&ctx.root)
        .env("CARGO_TARGET_DIR", ctx.target_dir())
        .env_remove("CARGO_BUILD_TARGET_DIR");
    util::without_cargo_run_env(&mut c);
    c
}

/// `cargo build --workspace`: every host package (agent-ebpf is built by the agent's
/// build script). The same package selection as `cargo test --workspace`, so most of
/// what one builds the other reuses.
fn build_workspace(ctx: &Ctx, release: bool) -> Command {
    let mut c = cargo(ctx);
    c.args(["build", "--workspace", "--exclude", EBPF_PACKAGE]);
    if release {
        c.arg("--release");
    }
    c
}

/// `xtask build`.
pub fn build_all(ctx: &Ctx, release: bool) -> Result<()> {
    say!(
        "building the workspace{}",
        if release { " (release)" } else { "" }
    );
    util::run(&mut build_workspace(ctx, release))
}

/// Builds the workspace and returns the paths of its binaries for the VM: all but
/// xtask, and at least [`VM_BINARIES`].
pub fn build_belay_binaries(ctx: &Ctx, release: bool) -> Result<Vec<PathBuf>> {
    let started = Instant::now();
    say!(
        "building the workspace (binaries for the VM{})",
        if release { ", release" } else { "" }
    );
    let artifacts =
        cargo_json(&mut build_workspace(ctx, release)).context("building belay's binaries")?;
    let bins: Vec<&Artifact> = artifacts
        .iter()
        .filter(|a| !a.test && a.kinds.iter().any(|k| k == "bin") && a.name != "xtask")
        .collect();
    for name in VM_BINARIES {
        if !bins.iter().any(|a| a.name == *name) {
            bail!("cargo built no binary named {name}");
        }
    }
    let mut out: Vec<PathBuf> = bins.iter().map(|a| a.executable.clone()).collect();
    out.sort();
    out.dedup();
    say!("built in {}", util::secs(started.elapsed()));
    Ok(out)
}

/// The VM tests and the helper binaries their package builds for them.
pub struct VmTests {
    /// Test executables (every test artifact of the tests package).
    pub tests: Vec<PathBuf>,
    /// The package's own binaries (e.g. `belay-actor`), for /opt/belay/bin.
    pub helpers: Vec<PathBuf>,
}

/// Builds the VM test executables: every test artifact of the tests package with its
/// `vm` feature, and that package's binaries. The whole workspace's tests are built (the
/// selection of the host's `cargo test --workspace`, whose build this reuses: building
/// only `-p belay-tests` would resolve features differently and rebuild the agent).
pub fn build_vm_tests(ctx: &Ctx) -> Result<VmTests> {
    let started = Instant::now();
    say!("building the VM tests ({TESTS_PACKAGE} with feature {VM_FEATURE})");
    let manifest = ctx.root.join("tests").join("Cargo.toml");
    let artifacts = cargo_json(cargo(ctx).args([
        "test",
        "--workspace",
        "--exclude",
        EBPF_PACKAGE,
        "--features",
        &format!("{TESTS_PACKAGE}/{VM_FEATURE}"),
        "--no-run",
    ]))
    .context("building the VM tests")?;
    say!("built in {}", util::secs(started.elapsed()));
    let mut out = VmTests {
        tests: Vec::new(),
        helpers: Vec::new(),
    };
    for a in artifacts {
        if a.package_name != TESTS_PACKAGE && a.manifest_path != manifest {
            continue;
        }
        if a.test {
            out.tests.push(a.executable);
        } else if a.kinds.iter().any(|k| k == "bin") {
            out.helpers.push(a.executable);
        }
    }
    for v in [&mut out.tests, &mut out.helpers] {
        v.sort();
        v.dedup();
    }
    Ok(out)
}

/// One `compiler-artifact` message with an executable.
struct Artifact {
    name: String,
    kinds: Vec<String>,
    test: bool,
    package_name: String,
    manifest_path: PathBuf,
    executable: PathBuf,
}

/// Runs cargo with `--message-format=json-render-diagnostics` and returns the artifacts
/// that have an executable. Diagnostics still reach the terminal.
fn cargo_json(c: &mut Command) -> Result<Vec<Artifact>> {
    c.arg("--message-format=json-render-diagnostics");
    let what = util::describe(c);
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{what}`"))?;
    let stdout = child.stdout.take().context("cargo stdout")?;
    let mut out = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if let Some(a) = parse_artifact(&v) {
            out.push(a);
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("`{what}` failed ({status})");
    }
    Ok(out)
}

fn parse_artifact(v: &Value) -> Option<Artifact> {
    if v["reason"] != "compiler-artifact" {
        return None;
    }
    let executable = PathBuf::from(v["executable"].as_str()?);
    let strs = |x: &Value| -> Vec<String> {
        x.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    Some(Artifact {
        name: v["target"]["name"].as_str().unwrap_or_default().to_string(),
        kinds: strs(&v["target"]["kind"]),
        test: v["profile"]["test"].as_bool().unwrap_or(false),
        package_name: package_name(v["package_id"].as_str().unwrap_or_default()),
        manifest_path: PathBuf::from(v["manifest_path"].as_str().unwrap_or_default()),
        executable,
    })
}

/// Package name from a package id: `path+file:///w/tests#belay-tests@0.1.0` (new form),
/// `path+file:///w/xtask#0.1.0` (name = last path segment) or `belay-tests 0.1.0 (...)`.
fn package_name(id: &str) -> String {
    if let Some((url, frag)) = id.split_once('#') {
        return match frag.split_once('@') {
            Some((name, _)) => name.to_string(),
            None => url.rsplit('/').next().unwrap_or_default().to_string(),
        };
    }
    id.split_whitespace().next().unwrap_or_default().to_string()
}

/// `cargo test --workspace` on the host, streaming its output; returns the summed
/// libtest counts and whether cargo succeeded.
pub fn host_tests(ctx: &Ctx) -> Result<(libtest::Counts, bool)> {
    let mut c = cargo(ctx);
    c.args([
        "test",
        "--workspace",
        "--exclude",
        EBPF_PACKAGE,
        "--no-fail-fast",
    ]);
    say!("running host tests: {}", util::describe(&c));
    let what = util::describe(&c);
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{what}`"))?;
    let stdout = child.stdout.take().context("cargo test stdout")?;
    let mut counts = libtest::Counts::default();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        counts.add_line(&line);
    }
    let status = child.wait()?;
    Ok((counts, status.success()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_ids() {
        assert_eq!(
            package_name("path+file:///w/tests#belay-tests@0.1.0"),
            "belay-tests"
        );
        assert_eq!(package_name("path+file:///w/xtask#0.1.0"), "xtask");
        assert_eq!(
            package_name("belay-tests 0.1.0 (path+file:///w/tests)"),
            "belay-tests"
        );
    }

    #[test]
    fn artifact_messages() {
        let m = serde_json::json!({
            "reason": "compiler-artifact",
            "package_id": "path+file:///w/tests#belay-tests@0.1.0",
            "manifest_path": "/w/tests/Cargo.toml",
            "target": {"name": "lsm_exec", "kind": ["test"]},
            "profile": {"test": true},
            "executable": "/w/target/debug/deps/lsm_exec-0123"
        });
        let a = parse_artifact(&m).unwrap();
        assert!(a.test);
        assert_eq!(a.package_name, "belay-tests");
        assert_eq!(a.name, "lsm_exec");
        assert_eq!(
            a.executable,
            PathBuf::from("/w/target/debug/deps/lsm_exec-0123")
        );
        let lib = serde_json::json!({"reason": "compiler-artifact", "executable": null});
        assert!(parse_artifact(&lib).is_none());
    }
}
