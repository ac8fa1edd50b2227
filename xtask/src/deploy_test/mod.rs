//! `xtask deploy-test`: what `xtask dist` makes, installed and run as users would.
//!
//! * The Helm chart renders with Helm's own engine (Helm v4's Go SDK through PyPI's
//!   `helm-python-sdk`; no `helm` binary is packaged in the registries reachable here)
//!   for several sets of values, and every object validates strictly against the
//!   Kubernetes [`K8S_VERSION`] schemas (PyPI's `kubernetes-validate`);
//!   `deploy/kubernetes/belay.yaml` is the default rendering, byte for byte
//!   (`--update-manifests` rewrites it).
//! * In a clean Debian 12 root booted with systemd-nspawn ([`nspawn`]): the units pass
//!   `systemd-analyze verify`; the packages install; belay-server runs as its own user
//!   and answers `/readyz` and gRPC calls (a fleet policy pushed with the CLI and an API
//!   token); belay-agent stays stopped without a policy; the server is stopped, upgraded to
//!   a rebuilt package and still has its database.
//! * With podman: the server image runs as uid 65532 on loopback and answers `/readyz`;
//!   the agent image's entrypoint starts and says that BPF LSM is missing.
//!
//! Prints `deploy-test: <check>: ok|FAILED ...` per check and a closing
//! `deploy-test: N passed, M failed`.

mod nspawn;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::Ctx;
use crate::dist::{self, Dist};
use crate::kernels::Kernel;
use crate::util::{self, say};
use crate::vm;

/// The Kubernetes version whose schemas the chart is validated against.
pub const K8S_VERSION: &str = "1.33.0";
/// Python packages (PyPI) that render and validate the chart.
const PY_PACKAGES: &[&str] = &["helm-python-sdk==0.2.2", "kubernetes-validate==1.37.0"];
const CHART_PY: &str = include_str!("chart.py");
const VM_CONNECT_SH: &str = include_str!("vm_connect.sh");

/// Debian packages the deploy tests use (installed by `xtask setup`).
pub const APT_PACKAGES: &[(&str, &str)] = &[
    ("debootstrap", "debootstrap"),
    ("systemd-container", "systemd-nspawn"),
    ("podman", "podman"),
    // podman's default runtime, crun, refuses these hosts' hybrid cgroup layout.
    ("runc", "runc"),
    ("curl", "curl"),
];

pub struct Options {
    pub update_manifests: bool,
}

fn work_dir(ctx: &Ctx) -> PathBuf {
    ctx.target_dir().join("belay-deploy")
}

/// The Python tools, installed with pip into `target/belay-deploy/python` (not into the
/// system's Python). Returns that directory, for PYTHONPATH.
pub fn python_tools(ctx: &Ctx) -> Result<PathBuf> {
    let dir = work_dir(ctx).join("python");
    let stamp = dir.join(".installed");
    let want = PY_PACKAGES.join(" ");
    if fs::read_to_string(&stamp).is_ok_and(|s| s == want) {
        return Ok(dir);
    }
    say!(
        "deploy-test: installing {want} from PyPI into {} (first run only)",
        dir.display()
    );
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    let mut c = util::cmd("python3");
    c.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-warn-script-location",
        "--target",
    ])
    .arg(&dir)
    .args(PY_PACKAGES);
    util::run(&mut c).context(
        "pip install failed (python3 >= 3.10 with pip is needed: apt-get install python3-pip)",
    )?;
    fs::write(&stamp, want)?;
    Ok(dir)
}

pub fn run(ctx: &Ctx, opts: &Options) -> Result<ExitCode> {
    let counts = checks(ctx, opts)?;
    Ok(if counts.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs every check, prints one line each and a summary; `xtask test` adds the counts
/// to its own.
pub fn checks(ctx: &Ctx, opts: &Options) -> Result<crate::libtest::Counts> {
    let started = Instant::now();
    let work = work_dir(ctx);
    fs::create_dir_all(&work)?;
    let mut results: Vec<(String, Result<()>)> = Vec::new();

    // The chart first: it needs no build.
    let t = Instant::now();
    match chart(ctx, &work, opts.update_manifests) {
        Ok(lines) => results.extend(lines),
        Err(e) => results.push(("chart".into(), Err(e))),
    }
    say!("deploy-test: chart checks took {}", util::secs(t.elapsed()));

    // debootstrap (network and disk) overlaps the release build (CPU) on a first run.
    let root_work = work.clone();
    let root_thread = std::thread::spawn(move || nspawn::pristine_root(&root_work));
    let t = Instant::now();
    let dist = dist::run(
        ctx,
        &dist::Options {
            revision: 1,
            out: None,
        },
    )?;
    let rev2 = dist::repackage(ctx, &dist, 2, &work.join("rev2"))?;
    say!("deploy-test: dist took {}", util::secs(t.elapsed()));

    let t = Instant::now();
    let root = root_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the debootstrap thread panicked"))?;
    match root.and_then(|tarball| debian(&work, &tarball, &dist, &rev2)) {
        Ok(lines) => results.extend(lines),
        Err(e) => results.push(("debian-12 packages under systemd".into(), Err(e))),
    }
    say!(
        "deploy-test: Debian 12 checks took {}",
        util::secs(t.elapsed())
    );

    let t = Instant::now();
    results.push((
        "VM with BPF LSM: the packaged agent holds a connect until denied".into(),
        packaged_agent_in_vm(ctx, &work, &dist),
    ));
    say!("deploy-test: VM check took {}", util::secs(t.elapsed()));

    let t = Instant::now();
    results.push((
        "podman: server image answers /readyz as non-root".into(),
        server_image(&dist),
    ));
    results.push((
        "podman: agent image reports missing BPF LSM".into(),
        agent_image(&dist),
    ));
    say!("deploy-test: image checks took {}", util::secs(t.elapsed()));

    let (mut passed, mut failed) = (0u64, 0u64);
    for (name, r) in &results {
        match r {
            Ok(()) => {
                passed += 1;
                println!("deploy-test: {name}: ok");
            }
            Err(e) => {
                failed += 1;
                println!("deploy-test: {name}: FAILED: {e:#}");
            }
        }
    }
    say!("deploy-test: took {}", util::secs(started.elapsed()));
    println!("deploy-test: {passed} passed, {failed} failed");
    Ok(crate::libtest::Counts { passed, failed })
}

/// Renders and validates the chart; compares the default rendering with
/// deploy/kubernetes/belay.yaml.
fn chart(ctx: &Ctx, work: &Path, update: bool) -> Result<Vec<(String, Result<()>)>> {
    let py = python_tools(ctx)?;
    let script = work.join("chart.py");
    fs::write(&script, CHART_PY)?;
    let out_dir = work.join("rendered");
    let out = util::cmd("python3")
        .env("PYTHONPATH", &py)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .arg(&script)
        .arg(ctx.root.join("deploy/helm/belay"))
        .arg(K8S_VERSION)
        .arg(&out_dir)
        .stdin(std::process::Stdio::null())
        .output()
        .context("running chart.py")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut results = Vec::new();
    // One result per scenario: its line and the indented error lines under it.
    let mut current: Option<(String, Vec<String>)> = None;
    let flush = |cur: Option<(String, Vec<String>)>, results: &mut Vec<(String, Result<()>)>| {
        if let Some((line, errors)) = cur {
            let rest = line.strip_prefix("chart: ").unwrap_or(&line);
            let (scenario, verdict) = rest.split_once(": ").unwrap_or((rest, ""));
            let ok =
                verdict.contains(" valid against ") || verdict.contains("refused as it must be");
            let name = format!("helm chart renders, {scenario}");
            results.push((
                name,
                if ok && errors.is_empty() {
                    say!("deploy-test: {line}");
                    Ok(())
                } else {
                    Err(anyhow::anyhow!("{verdict}\n{}", errors.join("\n")))
                },
            ));
        }
    };
    for line in stdout.lines() {
        if line.starts_with("chart: ") {
            flush(current.take(), &mut results);
            current = Some((line.to_string(), Vec::new()));
        } else if let Some((_, errs)) = current.as_mut() {
            errs.push(line.to_string());
        }
    }
    flush(current.take(), &mut results);
    if results.is_empty() || (!out.status.success() && results.iter().all(|(_, r)| r.is_ok())) {
        bail!(
            "chart.py failed ({}): {}{}",
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let generated = fs::read_to_string(out_dir.join("default.yaml"))?;
    let header = "# Generated from deploy/helm/belay by `cargo xtask deploy-test --update-manifests`\n\
                  # (helm template belay deploy/helm/belay -n belay-system --set namespace.create=true).\n\
                  # Edit the chart, not this file.\n";
    let want = format!("{header}{generated}");
    let path = ctx.root.join("deploy/kubernetes/belay.yaml");
    let in_step = if update {
        fs::create_dir_all(path.parent().context("no parent")?)?;
        fs::write(&path, &want)?;
        say!("deploy-test: wrote {}", path.display());
        Ok(())
    } else {
        match fs::read_to_string(&path) {
            Ok(have) if have == want => Ok(()),
            Ok(_) => Err(anyhow::anyhow!(
                "{} differs from the chart's default rendering ({}): run `cargo xtask deploy-test --update-manifests`",
                path.display(),
                out_dir.join("default.yaml").display()
            )),
            Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
        }
    };
    results.push(("deploy/kubernetes in step with the chart".into(), in_step));
    Ok(results)
}

/// The packages in a booted Debian 12 root.
fn debian(
    work: &Path,
    tarball: &Path,
    dist: &Dist,
    rev2: &[PathBuf],
) -> Result<Vec<(String, Result<()>)>> {
    let m = nspawn::Machine::boot(tarball, &work.join("nspawn-root"), &work.join("nspawn.log"))?;
    let mut results = Vec::new();
    let cache = "/var/cache/belay-test";
    for p in ["belay", "belay-agent", "belay-server"] {
        let deb = dist.deb(p)?;
        m.put(
            deb,
            &format!("{cache}/{}", deb.file_name().unwrap().to_string_lossy()),
        )?;
    }
    let rev2_server = rev2
        .iter()
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("belay-server_"))
        })
        .context("no rebuilt belay-server package")?;
    m.put(rev2_server, "/var/cache/belay-test/rev2/belay-server.deb")?;
    let v1 = &dist.debian_version;

    results.push((
        "dpkg -i of belay, belay-agent, belay-server into a clean Debian 12".into(),
        m.sh(&format!("dpkg -i {cache}/belay_{v1}_amd64.deb {cache}/belay-agent_{v1}_amd64.deb {cache}/belay-server_{v1}_amd64.deb"))
            .map(|_| ()),
    ));

    results.push((
        "systemd-analyze verify of both units".into(),
        (|| {
            let out = m.sh("systemd-analyze verify /lib/systemd/system/belay-server.service /lib/systemd/system/belay-agent.service 2>&1")?;
            let complaints: Vec<&str> = out.lines().filter(|l| l.contains("belay")).collect();
            if !complaints.is_empty() {
                bail!("{}", complaints.join("\n"));
            }
            Ok(())
        })(),
    ));

    results.push((
        "belay-server's unit: systemd-analyze security exposure at most 2.0".into(),
        m.sh("systemd-analyze security --offline=true --threshold=20 /lib/systemd/system/belay-server.service >/dev/null")
            .map(|_| ()),
    ));

    results.push((
        "belay-server runs as its system user and answers /readyz".into(),
        (|| {
            m.wait_http("http://127.0.0.1:9090/readyz", Duration::from_secs(30))?;
            let pid = m.sh("systemctl show -p MainPID --value belay-server")?;
            let uid = m.sh(&format!(
                "awk '/^Uid:/ {{print $2}}' /proc/{}/status",
                pid.trim()
            ))?;
            let want = m.sh("id -u belay-server")?;
            if uid.trim() != want.trim() || want.trim() == "0" {
                bail!(
                    "belay-server runs as uid {} (belay-server is {})",
                    uid.trim(),
                    want.trim()
                );
            }
            let mode =
                m.sh("stat -c '%U %a' /var/lib/belay-server /var/lib/belay-server/server.db")?;
            if !mode.lines().all(|l| l.starts_with("belay-server ")) {
                bail!("state not owned by belay-server: {mode}");
            }
            Ok(())
        })(),
    ));

    let policy_before = (|| -> Result<String> {
        // An admin API token, as README "Reviewers" sets one up.
        let token = m.sh("belay-server api-token new 2>/tmp/hash")?;
        let hash = m.sh("cat /tmp/hash")?;
        let hash_line = hash
            .lines()
            .find(|l| l.trim_start().starts_with("sha256"))
            .context("no sha256 line from api-token new")?;
        fs::create_dir_all(m.root.join("etc/belay"))?;
        fs::write(
            m.root.join("etc/belay/server-auth.toml"),
            format!("[[api_token]]\nname = \"deploy-test\"\n{hash_line}\nroles = [\"admin\"]\n"),
        )?;
        m.sh("chgrp belay-server /etc/belay/server-auth.toml && chmod 0640 /etc/belay/server-auth.toml")?;
        m.sh("belay-server check-config /etc/belay/server-auth.toml")?;
        m.sh("echo BELAY_AUTH_CONFIG=/etc/belay/server-auth.toml >> /etc/default/belay-server && systemctl restart belay-server")?;
        m.wait_http("http://127.0.0.1:9090/readyz", Duration::from_secs(30))?;
        fs::write(m.root.join("root/token"), token.trim())?;
        m.sh(&format!(
            "{CLI} policy push /usr/share/doc/belay-agent/examples/policy.yaml"
        ))?;
        policy_show(&m)
    })();
    let before_ok = policy_before.is_ok();
    results.push((
        "gRPC: the CLI pushes and reads a fleet policy over TLS with an API token".into(),
        policy_before
            .as_ref()
            .map(|_| ())
            .map_err(|e| anyhow::anyhow!("{e:#}")),
    ));

    results.push((
        "belay-agent is enabled but not started without /etc/belay/policy.yaml".into(),
        (|| {
            let enabled = m.sh_status("systemctl is-enabled belay-agent")?.1;
            if enabled.trim() != "enabled" {
                bail!("belay-agent is {}", enabled.trim());
            }
            m.sh("systemctl start belay-agent")?;
            let show = m.sh("systemctl show -p ActiveState -p ConditionResult belay-agent")?;
            if !show.contains("ActiveState=inactive") || !show.contains("ConditionResult=no") {
                bail!(
                    "after a start without a policy: {}",
                    show.replace('\n', " ")
                );
            }
            Ok(())
        })(),
    ));

    results.push((
        "belay-server stopped, upgraded to a rebuilt package, keeps its database".into(),
        (|| {
            if !before_ok {
                bail!("no policy was pushed before the upgrade");
            }
            m.sh("systemctl stop belay-server")?;
            let (active, _) = m.sh_status("systemctl is-active --quiet belay-server")?;
            if active {
                bail!("belay-server still active after stop");
            }
            m.sh("dpkg -i /var/cache/belay-test/rev2/belay-server.deb")?;
            let v = m.sh("dpkg-query -W -f='${Version}' belay-server")?;
            if v.trim() != format!("{}-2", dist::VERSION) {
                bail!("installed version {} after the upgrade", v.trim());
            }
            m.wait_http("http://127.0.0.1:9090/readyz", Duration::from_secs(30))?;
            let after = policy_show(&m)?;
            let before = policy_before
                .as_ref()
                .map_err(|e| anyhow::anyhow!("{e:#}"))?;
            if &after != before {
                bail!("fleet policy before the upgrade:\n{before}\nafter:\n{after}");
            }
            Ok(())
        })(),
    ));
    let journal = m
        .sh("journalctl --no-pager -u belay-server -n 5")
        .unwrap_or_default();
    say!(
        "deploy-test: belay-server's last log lines in the container:\n{}",
        journal.trim_end()
    );
    let root = m.root.clone();
    m.shutdown()?;
    // 350 MB; the pristine tarball stays for the next run.
    if results.iter().all(|(_, r)| r.is_ok()) {
        fs::remove_dir_all(&root)?;
    }
    Ok(results)
}

const CLI: &str = "BELAY_TOKEN=$(cat /root/token) belay --server https://127.0.0.1:50051 \
                   --server-ca /var/lib/belay-server/ca.pem";

/// The fleet policy's version and hash, as the server reports them.
fn policy_show(m: &nspawn::Machine) -> Result<String> {
    let out = m.sh(&format!("{CLI} --output json policy show"))?;
    let v: serde_json::Value =
        serde_json::from_str(out.trim()).with_context(|| format!("policy show printed: {out}"))?;
    let policy = v.get("policy").unwrap_or(&v);
    let sha = policy.get("sha256").context(format!("no sha256 in {v}"))?;
    Ok(format!(
        "{} {}",
        policy.get("version").unwrap_or(&serde_json::Value::Null),
        sha
    ))
}

/// The agent and CLI binaries out of the packages, in a VM booting Debian's 6.12 cloud
/// kernel with BPF LSM (as `xtask vm-run --no-build` boots it).
fn packaged_agent_in_vm(ctx: &Ctx, work: &Path, dist: &Dist) -> Result<()> {
    let pkg = work.join("pkg-root");
    if pkg.exists() {
        fs::remove_dir_all(&pkg)?;
    }
    for p in ["belay-agent", "belay"] {
        util::run(util::cmd("dpkg-deb").arg("-x").arg(dist.deb(p)?).arg(&pkg))?;
    }
    let script = work.join("vm_connect.sh");
    fs::write(&script, VM_CONNECT_SH)?;
    // In this process, not by running xtask again: `xtask test` has rebuilt xtask's own
    // binary by now (the host tests build the workspace), so its path names a deleted file.
    let mut guest = vm::Guest::default();
    guest.include_arg(&format!(
        "{}:/opt/pkg/usr/bin",
        pkg.join("usr/bin").display()
    ))?;
    guest.include_arg(&format!("{}:/opt/pkg/vm_connect.sh", script.display()))?;
    guest.payload = "/bin/sh /opt/pkg/vm_connect.sh\n".to_owned();
    let image = vm::kernel_image(ctx, Kernel::V6_12)?;
    let initrd = guest.build(ctx, "deploy-test")?;
    let mut output = String::new();
    let out = vm::boot_streaming(
        &image,
        &initrd,
        vm::DEFAULT_SMP,
        Duration::from_secs(600),
        &mut |line| {
            output.push_str(line);
            output.push('\n');
        },
    )
    .context("booting the VM with the packaged agent")?;
    let stdout = output;
    for l in stdout.lines().filter(|l| l.starts_with("pkg-agent:")) {
        say!("deploy-test: {l}");
    }
    fs::remove_dir_all(&pkg)?;
    if !stdout
        .lines()
        .any(|l| l.trim() == "PKG-AGENT: held and denied")
    {
        bail!(
            "no `PKG-AGENT: held and denied` line (exit status {}); VM output:\n{}",
            out.status,
            stdout
        );
    }
    Ok(())
}

/// A port free on loopback now.
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `podman run --rm` as this sandbox allows it: with runc (crun refuses the hosts'
/// cgroup v1/v2 hybrid layout), and resource limits no higher than this process's (podman's
/// defaults, a million open files, need CAP_SYS_RESOURCE, which the sandbox lacks).
fn podman_run() -> std::process::Command {
    let nofile = fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|x| x.starts_with("Max open files"))
                .and_then(|x| {
                    x.split_whitespace()
                        .nth(4)
                        .and_then(|h| h.parse::<u64>().ok())
                })
        })
        .unwrap_or(1024)
        .min(65536);
    let mut c = util::cmd("podman");
    c.args(["--runtime", "runc", "run", "--rm"])
        .args(["--ulimit", &format!("nofile={nofile}:{nofile}")])
        .args(["--ulimit", "nproc=4096:4096"]);
    c
}

/// `podman load`; returns the image name it reports.
fn podman_load(archive: &Path) -> Result<String> {
    let out = util::output(util::cmd("podman").args(["load", "-q", "-i"]).arg(archive))?;
    out.lines()
        .find_map(|l| l.split_once(": ").map(|(_, n)| n.trim().to_string()))
        .with_context(|| format!("podman load printed no image name: {out}"))
}

fn server_image(dist: &Dist) -> Result<()> {
    let image = podman_load(dist.image("belay-server")?)?;
    let want = format!("localhost/belay-server:{}", dist::VERSION);
    if image != want {
        bail!("podman load named the image {image}, not {want}");
    }
    let name = format!("belay-deploy-test-{}", std::process::id());
    let (http, grpc) = (free_port()?, free_port()?);
    let r = (|| {
        util::output(podman_run().args([
            "-d",
            "--name",
            &name,
            "--network",
            "host",
            "-e",
            &format!("BELAY_HTTP_LISTEN=127.0.0.1:{http}"),
            "-e",
            &format!("BELAY_SERVER_LISTEN=127.0.0.1:{grpc}"),
            &image,
        ]))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match http_get(http, "/readyz") {
                Ok((200, _)) => break,
                other if Instant::now() > deadline => {
                    let logs =
                        util::output(util::cmd("podman").args(["logs", &name])).unwrap_or_default();
                    bail!("/readyz: {other:?}; container log:\n{logs}");
                }
                _ => std::thread::sleep(Duration::from_millis(300)),
            }
        }
        let user = util::output(util::cmd("podman").args(["top", &name, "user", "huser"]))?;
        if !user
            .lines()
            .skip(1)
            .all(|l| l.split_whitespace().next() == Some("nonroot"))
        {
            bail!("the server does not run as nonroot: {user}");
        }
        let labels = util::output(util::cmd("podman").args([
            "image",
            "inspect",
            "--format",
            "{{index .Labels \"org.opencontainers.image.version\"}}",
            &image,
        ]))?;
        if labels.trim() != dist::VERSION {
            bail!(
                "image label org.opencontainers.image.version is {:?}",
                labels.trim()
            );
        }
        Ok(())
    })();
    let _ = util::output(util::cmd("podman").args(["rm", "-f", "-t", "2", &name]));
    let _ = util::output(util::cmd("podman").args(["rmi", "-f", &image]));
    r
}

fn agent_image(dist: &Dist) -> Result<()> {
    let image = podman_load(dist.image("belay-agent")?)?;
    let r = (|| {
        let out = podman_run()
            .args([&image, "--policy", "/usr/share/belay/example-policy.yaml"])
            .output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            bail!("belay-agent exited 0 on a host without BPF LSM: {text}");
        }
        if !text.contains("BPF LSM is not active") {
            bail!("belay-agent's error does not name BPF LSM: {}", text.trim());
        }
        say!(
            "deploy-test: agent image says: {}",
            text.lines().last().unwrap_or("").trim()
        );
        Ok(())
    })();
    let _ = util::output(util::cmd("podman").args(["rmi", "-f", &image]));
    r
}

/// A plain HTTP/1.0 GET on loopback: status and body.
fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status")?;
    Ok((
        status,
        buf.split_once("\r\n\r\n")
            .map(|x| x.1)
            .unwrap_or("")
            .to_string(),
    ))
}
