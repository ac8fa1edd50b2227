//! Debian packages, staged as a tree and built with `dpkg-deb --root-owner-group`.
//!
//! * `belay-server`: the binary, its unit, `/etc/default/belay-server` (a conffile), and
//!   maintainer scripts that create the `belay-server` system user and
//!   `/var/lib/belay-server`, enable the unit and (re)start it; the database is kept on
//!   upgrade, removal and purge.
//! * `belay-agent`: the binary, its unit, `/etc/default/belay-agent` (a conffile) and the
//!   example policy; the unit is enabled but starts only once `/etc/belay/policy.yaml`
//!   exists (its `ConditionPathExists`), and the postinst says so.
//! * `belay`: the CLI.
//!
//! Maintainer scripts and default files live in `deploy/debian/<package>/`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::util;

pub struct Inputs<'a> {
    pub root: &'a Path,
    pub bin_dir: &'a Path,
    /// Debian version, e.g. `0.1.0-1`.
    pub version: &'a str,
    /// Minimum glibc, e.g. `2.34`.
    pub glibc: &'a str,
    pub epoch: u64,
}

struct Package {
    name: &'static str,
    binary: &'static str,
    unit: Option<&'static str>,
    /// Extra Depends besides the shared libraries.
    depends: &'static [&'static str],
    recommends: &'static str,
    summary: &'static str,
    description: &'static str,
    /// (file under deploy/, path in the package)
    docs: &'static [(&'static str, &'static str)],
}

const PACKAGES: &[Package] = &[
    Package {
        name: "belay-server",
        binary: "belay-server",
        unit: Some("belay-server.service"),
        depends: &["passwd"],
        recommends: "belay",
        summary: "central approval service of belay",
        description: "Agents on every host submit the actions belay holds; reviewers approve,\n\
             deny or kill them through the API, the CLI or the console; every request\n\
             and decision goes to a hash-chained audit log. SQLite by default,\n\
             PostgreSQL for several replicas. Runs as the belay-server user with its\n\
             state in /var/lib/belay-server; settings in /etc/default/belay-server.",
        docs: &[],
    },
    Package {
        name: "belay-agent",
        binary: "belay-agent",
        unit: Some("belay-agent.service"),
        // The unit reloads with /bin/kill, which Debian 12 ships in procps (a minimal
        // root has none: `systemd-analyze verify` found that).
        depends: &["procps"],
        recommends: "belay",
        summary: "host agent of belay: holds AI agents' execs and connections",
        description: "BPF LSM hooks pause the execs and connections of the processes a policy\n\
             names as AI agents until a rule or a person decides. Needs a kernel\n\
             with BPF LSM active (bpf in /sys/kernel/security/lsm). The service\n\
             starts once /etc/belay/policy.yaml exists; an example policy is in\n\
             /usr/share/doc/belay-agent/examples.",
        docs: &[("policy/example.yaml", "examples/policy.yaml")],
    },
    Package {
        name: "belay",
        binary: "belay",
        unit: None,
        depends: &[],
        recommends: "",
        summary: "command line of belay: review held actions, run commands watched",
        description: "belay pending, show, approve, deny and kill talk to this host's\n\
             belay-agent or to belay-server; belay run starts a command under\n\
             belay's watch.",
        docs: &[],
    },
];

pub fn build_all(inp: &Inputs<'_>, out: &Path) -> Result<Vec<PathBuf>> {
    let mut debs = Vec::new();
    for p in PACKAGES {
        debs.push(build(inp, p, out).with_context(|| format!("building the {} package", p.name))?);
    }
    Ok(debs)
}

fn build(inp: &Inputs<'_>, p: &Package, out: &Path) -> Result<PathBuf> {
    let stage = out.join(format!(".stage-{}", p.name));
    if stage.exists() {
        fs::remove_dir_all(&stage)?;
    }
    let deploy = inp.root.join("deploy");
    let scripts = deploy.join("debian").join(p.name);
    let bin = fs::read(inp.bin_dir.join(p.binary))?;
    put(&stage, &format!("usr/bin/{}", p.binary), &bin, 0o755)?;
    if let Some(unit) = p.unit {
        let text = read(&deploy.join("systemd").join(unit))?;
        put(
            &stage,
            &format!("lib/systemd/system/{unit}"),
            text.as_bytes(),
            0o644,
        )?;
    }
    let mut conffiles = String::new();
    let default = scripts.join("default");
    if default.exists() {
        let path = format!("etc/default/{}", p.name);
        put(&stage, &path, read(&default)?.as_bytes(), 0o644)?;
        conffiles.push_str(&format!("/{path}\n"));
    }
    let doc = format!("usr/share/doc/{}", p.name);
    put(
        &stage,
        &format!("{doc}/copyright"),
        copyright().as_bytes(),
        0o644,
    )?;
    for (src, dst) in p.docs {
        put(
            &stage,
            &format!("{doc}/{dst}"),
            read(&deploy.join(src))?.as_bytes(),
            0o644,
        )?;
    }
    let installed_kib = du_kib(&stage)?;
    let md5sums = md5sums(&stage)?;
    let debian = stage.join("DEBIAN");
    put(&stage, "DEBIAN/md5sums", md5sums.as_bytes(), 0o644)?;
    if !conffiles.is_empty() {
        put(&stage, "DEBIAN/conffiles", conffiles.as_bytes(), 0o644)?;
    }
    for script in ["postinst", "prerm", "postrm"] {
        let src = scripts.join(script);
        if src.exists() {
            put(
                &stage,
                &format!("DEBIAN/{script}"),
                read(&src)?.as_bytes(),
                0o755,
            )?;
        }
    }
    let mut depends = shlib_depends(&inp.bin_dir.join(p.binary), inp.glibc)?;
    depends.extend(p.depends.iter().map(|d| d.to_string()));
    let mut control = format!(
        "Package: {}\nVersion: {}\nArchitecture: amd64\nMaintainer: belay developers <belay@example.invalid>\n\
         Installed-Size: {installed_kib}\nDepends: {}\n",
        p.name,
        inp.version,
        depends.join(", ")
    );
    if !p.recommends.is_empty() {
        control.push_str(&format!("Recommends: {}\n", p.recommends));
    }
    control.push_str(&format!(
        "Section: admin\nPriority: optional\nHomepage: https://example.invalid/belay\nDescription: {}\n",
        p.summary
    ));
    for line in p.description.lines() {
        control.push_str(&format!(" {}\n", line.trim()));
    }
    fs::write(debian.join("control"), control)?;
    let deb = out.join(format!("{}_{}_amd64.deb", p.name, inp.version));
    util::run(
        util::cmd("dpkg-deb")
            .env("SOURCE_DATE_EPOCH", inp.epoch.to_string())
            .args(["--root-owner-group", "-Zgzip", "--build"])
            .arg(&stage)
            .arg(&deb)
            .stdout(std::process::Stdio::null()),
    )?;
    fs::remove_dir_all(&stage)?;
    Ok(deb)
}

/// `libc6 (>= 2.34)` and `libgcc-s1` from the binary's `NEEDED` entries.
fn shlib_depends(binary: &Path, glibc: &str) -> Result<Vec<String>> {
    let out = util::output(util::cmd("objdump").arg("-p").arg(binary))?;
    let mut deps = Vec::new();
    for lib in out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("NEEDED"))
        .map(str::trim)
    {
        let dep = match lib {
            "libc.so.6"
            | "libm.so.6"
            | "libdl.so.2"
            | "libpthread.so.0"
            | "librt.so.1"
            | "ld-linux-x86-64.so.2" => format!("libc6 (>= {glibc})"),
            "libgcc_s.so.1" => "libgcc-s1".to_string(),
            other => bail!(
                "{} needs {other}: no Debian package known for it",
                binary.display()
            ),
        };
        if !deps.contains(&dep) {
            deps.push(dep);
        }
    }
    Ok(deps)
}

fn put(stage: &Path, rel: &str, data: &[u8], mode: u32) -> Result<()> {
    let path = stage.join(rel);
    let parent = path.parent().context("no parent")?;
    fs::create_dir_all(parent)?;
    let mut dir = parent;
    while dir != stage {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
        dir = dir.parent().context("no parent")?;
    }
    fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn du_kib(stage: &Path) -> Result<u64> {
    let out = util::output(util::cmd("du").args(["-sk", "--apparent-size"]).arg(stage))?;
    out.split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .context("du printed no size")
}

/// `DEBIAN/md5sums`, as dpkg's own tools write it.
fn md5sums(stage: &Path) -> Result<String> {
    let mut c = util::cmd("sh");
    c.current_dir(stage).args([
        "-c",
        "find . -type f ! -path './DEBIAN/*' -printf '%P\\0' | sort -z | xargs -0 -r md5sum",
    ]);
    util::output(&mut c)
}

fn copyright() -> String {
    "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
     Upstream-Name: belay\n\
     Source: https://example.invalid/belay\n\n\
     Files: *\n\
     Copyright: belay developers\n\
     License: GPL-2.0-only OR Apache-2.0\n\
     \x20On Debian systems the full texts are in /usr/share/common-licenses/GPL-2\n\
     \x20and /usr/share/common-licenses/Apache-2.0.\n"
        .to_string()
}
